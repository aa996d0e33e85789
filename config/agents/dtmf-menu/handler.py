"""A keypad menu: press 1 for sales, 2 for support, 0 to hear the menu again.

Digits arrive as DTMFEvents (RFC 4733 telephone-events from the caller's
phone). Numbers come from the agent's variables `sales` and `support`.
"""

from primfunctions.context import Context
from primfunctions.events import (
    DTMFEvent,
    ErrorEvent,
    Event,
    StartEvent,
    StopEvent,
    TextToSpeechEvent,
    TimeoutEvent,
    TransferSessionEvent,
)

VOICE = "nova"
MENU = "Press 1 for sales, or 2 for support. Press 0 to hear this again."


async def handler(event: Event, context: Context):
    variables = context.variables or {}
    if isinstance(event, StartEvent):
        yield TextToSpeechEvent(text="Welcome. " + MENU, voice=VOICE)
    elif isinstance(event, DTMFEvent):
        digits = event.data.get("digits", "")
        context.set_data("last_digits", digits)
        if digits.startswith("1"):
            yield TransferSessionEvent(
                phone_number=str(variables.get("sales", "+14155550101")),
                closing_speech="Sales. Please hold.",
                voice=VOICE,
            )
        elif digits.startswith("2"):
            yield TransferSessionEvent(
                phone_number=str(variables.get("support", "+14155550102")),
                closing_speech="Support. Please hold.",
                voice=VOICE,
            )
        else:
            yield TextToSpeechEvent(text=MENU, voice=VOICE)
    elif isinstance(event, TimeoutEvent):
        if event.data.get("count", 1) >= 2:
            yield StopEvent(closing_speech="Goodbye.", voice=VOICE)
        else:
            yield TextToSpeechEvent(text=MENU, voice=VOICE)
    elif isinstance(event, ErrorEvent):
        yield TextToSpeechEvent(text="That line is busy. " + MENU, voice=VOICE)
