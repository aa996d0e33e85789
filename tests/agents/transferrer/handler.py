# Test agent: transfers every call to the number in the `target` variable,
# with the transfer mode in the optional `mode` variable ("refer", the
# default, or "bridge"). If the transfer fails, voicegate tells the handler
# with an ErrorEvent: keep the message and end the call.
from primfunctions.events import ErrorEvent, Event, StartEvent, StopEvent, TransferSessionEvent
from primfunctions.context import Context


async def handler(event: Event, context: Context):
    if isinstance(event, StartEvent):
        yield TransferSessionEvent(
            phone_number=context.variables["target"],
            mode=context.variables.get("mode"),
        )
    elif isinstance(event, ErrorEvent):
        context.set_output({"transfer_error": event.data.get("message")})
        yield StopEvent()
