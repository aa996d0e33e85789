# Test agent for the barge-in benchmark (tests/examples/turn_latency.rs):
# greets, then answers every TextEvent with a long paragraph of speech
# (about 30 s with flite) that the caller may interrupt. Explicitly
# interruptible, so barge-in flushes it whatever the session default is.
# The reply starts with a running number and the caller's words, so like
# an LLM's answer it is new text each turn (synthesised live, never from
# the synthesis cache).
from primfunctions.events import Event, StartEvent, TextEvent, TextToSpeechEvent
from primfunctions.context import Context
import itertools

PARAGRAPH = (
    "Thank you for calling, let me tell you everything about our opening hours and services. "
    "We are open from nine in the morning until six in the evening, Monday to Friday, "
    "and from ten in the morning until four in the afternoon on Saturdays. "
    "On Sundays and public holidays the office is closed, but you can still leave a message. "
    "Our support team answers every message within one working day, usually much sooner. "
    "If you are calling about an order, please have your order number ready, "
    "it is printed at the top of your confirmation email. "
    "If you are calling about a delivery, remember that deliveries run in the morning only, "
    "and that a signature is needed for every parcel worth more than fifty pounds. "
    "Finally, if you would like to speak to a person, just say so at any time."
)

REPLIES = itertools.count(1)


async def handler(event: Event, context: Context):
    if isinstance(event, StartEvent):
        yield TextToSpeechEvent(text="Hello!", voice="nova")
    if isinstance(event, TextEvent):
        said = event.data.get("text")
        yield TextToSpeechEvent(text=f"Reply {next(REPLIES)}. You said: {said}. {PARAGRAPH}", voice="nova", interruptible=True)
