# Test agent: transfers every call to the number in the `target` variable
# (REFER through the trunk). If the transfer fails, voicegate tells the
# handler with an ErrorEvent: keep the message and end the call.
from primfunctions.events import ErrorEvent, Event, StartEvent, StopEvent, TransferSessionEvent
from primfunctions.context import Context


async def handler(event: Event, context: Context):
    if isinstance(event, StartEvent):
        yield TransferSessionEvent(phone_number=context.variables["target"])
    elif isinstance(event, ErrorEvent):
        context.set_output({"transfer_error": event.data.get("message")})
        yield StopEvent()
