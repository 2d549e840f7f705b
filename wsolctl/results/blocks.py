"""The blocks a report is made of, rendered to Markdown (``report.py``) or HTML (``html.py``); text
and table cells use Markdown inline markup only (``**bold**``, ``*italic*``, ``` `code` ```)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Text:
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Image:
    alt: str
    path: str  # relative to the report's folder


@dataclass
class Table:
    """A titled table of Markdown cells."""

    title: str
    header: list[str]
    rows: list[list[str]]
    caption: str = ""


Block = Union[Heading, Text, Bullets, Table, Image]
