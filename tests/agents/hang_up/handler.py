# Test agent: greets, then ends the call itself with closing speech. On the
# final clean-up StopEvent it records that clean-up ran.
from primfunctions.events import Event, StartEvent, StopEvent, TextToSpeechEvent
from primfunctions.context import Context


async def handler(event: Event, context: Context):
    if isinstance(event, StartEvent):
        yield TextToSpeechEvent(text="This call ends now.", voice="nova")
        yield StopEvent(closing_speech="Goodbye.")
    elif isinstance(event, StopEvent):
        context.set_output({"cleanup": "done"})
