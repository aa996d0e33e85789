# Test agent: hands every call to the agent "back" at once, with data.
from primfunctions.events import Event, StartEvent, TransferSessionEvent
from primfunctions.context import Context


async def handler(event: Event, context: Context):
    if isinstance(event, StartEvent):
        yield TransferSessionEvent(
            agent_id="back", environment="development", data={"handed_by": "front"}
        )
