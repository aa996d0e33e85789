"""Concierge: a restaurant front desk that takes table bookings over the phone.

Shows the parts of the primfunctions API beyond the echo example:

- context.data keeps per-call state between turns (party size, attempts);
- context.create_task runs a slow lookup in the background while the caller hears
  a filler sentence; its events arrive with background=true;
- context.set_output records the result of the call (kept by voicegate, delivered
  with session.ended), and the final StopEvent records a summary during clean-up;
- TimeoutEvent, DTMFEvent, TransferSessionEvent and StopEvent on a phone call.

Try it: voicegate chat --agent config/agents/concierge
"""
import asyncio
import re

from primfunctions.context import Context
from primfunctions.events import (
    DTMFEvent,
    Event,
    LogEvent,
    StartEvent,
    StopEvent,
    TextEvent,
    TextToSpeechEvent,
    TimeoutEvent,
    TransferSessionEvent,
)

VOICE = "nova"
WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8}


def party_size(text: str):
    m = re.search(r"\bfor (\d+|" + "|".join(WORDS) + r")\b", text)
    if not m:
        return None
    word = m.group(1)
    return int(word) if word.isdigit() else WORDS[word]


async def check_availability(context: Context, party: int):
    """The slow part (a reservation system would be called here)."""
    await asyncio.sleep(float(context.variables.get("lookup_seconds", 0.2)))
    if party > 8:
        yield TextToSpeechEvent(text=f"I'm sorry, we cannot seat {party} people tonight.", voice=VOICE)
        return
    booking = {"party": party, "time": "19:00", "status": "confirmed"}
    context.set_output({**context.output_data, "booking": booking})
    yield TextToSpeechEvent(
        text=f"Good news: your table for {party} is booked for 7 pm. Anything else?",
        voice=VOICE,
    )


def transfer_to_front_desk(context: Context):
    return TransferSessionEvent(
        phone_number=context.variables.get("front_desk", "+15550100"),
        closing_speech="Connecting you to the front desk now.",
        voice=VOICE,
    )


async def handler(event: Event, context: Context):
    if isinstance(event, StartEvent):
        context.set_data("turns", 0)
        caller = context.input_data.get("caller_name")
        hello = f"Hello {caller}," if caller else "Hello,"
        yield TextToSpeechEvent(text=f"{hello} this is the Harbor Bistro. How can I help?", voice=VOICE)
        return

    if isinstance(event, StopEvent):
        # Clean-up: the call is over. Record a summary; speech is not possible now.
        context.set_output({**context.output_data, "turns": context.get_data("turns", 0)})
        yield LogEvent("concierge call summarised")
        return

    if isinstance(event, TimeoutEvent):
        if event.data.get("count", 0) >= 2:
            yield StopEvent(closing_speech="I'll let you go. Goodbye!", voice=VOICE)
        else:
            yield TextToSpeechEvent(text="Are you still there?", voice=VOICE)
        return

    if isinstance(event, DTMFEvent):
        if event.data.get("digits") == "0":
            yield transfer_to_front_desk(context)
        return

    if not isinstance(event, TextEvent):
        return

    context.set_data("turns", context.get_data("turns", 0) + 1)
    text = (event.data.get("text") or "").lower()
    if event.data.get("previous_turn_interrupted"):
        yield LogEvent("caller interrupted the previous answer")

    party = party_size(text)
    if "book" in text or "table" in text or "reserv" in text:
        if party is None:
            yield TextToSpeechEvent(text="For how many people?", voice=VOICE)
            context.set_data("booking_wanted", True)
            return
    if party is not None and (context.get_data("booking_wanted") or "book" in text or "table" in text):
        context.set_data("booking_wanted", False)
        yield TextToSpeechEvent(text=f"One moment, let me check a table for {party}.", voice=VOICE)
        context.create_task(check_availability(context, party), name="availability")
    elif "hour" in text or "open" in text:
        yield TextToSpeechEvent(text="We are open every day from noon to 11 pm.", voice=VOICE)
    elif "front desk" in text or "human" in text or "person" in text:
        yield transfer_to_front_desk(context)
    elif "bye" in text or "that's all" in text:
        yield StopEvent(closing_speech="Thank you for calling the Harbor Bistro. Goodbye!", voice=VOICE)
    else:
        yield TextToSpeechEvent(
            text="I can book a table, tell you our hours, or connect you to the front desk.",
            voice=VOICE,
        )
