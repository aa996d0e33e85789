"""A second module: multi-file agents import their siblings."""


def shout(text: str) -> str:
    return text.upper() + "!"
