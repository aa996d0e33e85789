from primfunctions.events import Event, StartEvent, TextEvent, StopEvent, TextToSpeechEvent, TimeoutEvent
from primfunctions.context import Context

async def handler(event: Event, context: Context):
    if isinstance(event, StartEvent):
        yield TextToSpeechEvent(text="Hello!", voice="nova")
    if isinstance(event, TextEvent):
        yield TextToSpeechEvent(text=f"You said: {event.data.get('text')}", voice="nova")
