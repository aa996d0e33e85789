# Test agent: plays the WAV file named by the `audio` variable when the call
# starts (AudioEvent), nothing else. Not interruptible: a peer that echoes
# our audio back (SIPp -rtp_echo) would otherwise barge in on it.
from primfunctions.events import AudioEvent, Event, StartEvent
from primfunctions.context import Context


async def handler(event: Event, context: Context):
    if isinstance(event, StartEvent):
        yield AudioEvent(path=context.variables["audio"], interruptible=False)
