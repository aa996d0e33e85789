# Test agent: records the input it was handed, then ends the call.
from primfunctions.events import Event, StartEvent, StopEvent
from primfunctions.context import Context


async def handler(event: Event, context: Context):
    if isinstance(event, StartEvent):
        context.set_output({"input": context.input_data, "agent": context.agent_id})
        yield StopEvent()
