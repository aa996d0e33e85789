from primfunctions.events import Event

async def handler(event: Event, context)
    yield None
