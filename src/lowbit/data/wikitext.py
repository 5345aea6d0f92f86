"""Plain text from a MediaWiki XML dump: drop redirects and non-article pages, strip the markup.

A small, dependency-free cleaner in the spirit of WikiExtractor / gensim's ``filter_wiki``: templates,
tables, references, files, categories, HTML and emphasis go; link labels, headings and prose stay.
"""
from __future__ import annotations

import bz2
import html
import io
import re
import xml.etree.ElementTree as ET

# Innermost-first patterns: applying them until nothing changes removes nested constructs.
_TEMPLATE = re.compile(r"\{\{[^{}]*\}\}")
_TABLE = re.compile(r"\{\|(?:(?!\{\||\|\}).)*\|\}", re.S)
_LINK = re.compile(r"\[\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\]")  # a caption may hold single [brackets]
_NAMESPACED = re.compile(r"^\s*:?\s*(file|image|category|media|wikipedia|wp|[a-z]{2,3}(-[a-z]+)?)\s*:", re.I)
_EXTERNAL = re.compile(r"\[(?:https?:|ftp:|//)[^\s\]]*\s*([^\]]*)\]")
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_REF = re.compile(r"<ref[^>/]*/>|<ref[^>]*>.*?</ref>", re.S | re.I)
_DROP_TAGS = re.compile(r"<(math|gallery|timeline|source|syntaxhighlight|score)[^>]*>.*?</\1>", re.S | re.I)
_TAG = re.compile(r"</?[a-zA-Z][^>]*>")
_HEADING = re.compile(r"^=+\s*(.*?)\s*=+\s*$", re.M)
_EMPHASIS = re.compile(r"'{2,}")
_LIST = re.compile(r"^[*#:;]+\s*", re.M)
_LEFTOVER = re.compile(r"\{\{[^\n]*|\}\}|\[\[|\]\]")  # unbalanced markup (a template quoting "{|}~")


def _until_stable(pattern: re.Pattern[str], repl, text: str) -> str:
    while True:
        new = pattern.sub(repl, text)
        if new == text:
            return new
        text = new


def _link_label(match: re.Match[str]) -> str:
    body = match.group(1)
    if _NAMESPACED.match(body):
        return ""
    return body.split("|")[-1]


def strip_markup(wikitext: str) -> str:
    """Plain prose from one article's wikitext.

    Args:
        wikitext: the text of a ``<text>`` element (XML entities already decoded).

    Returns:
        Paragraphs separated by blank lines, whitespace collapsed inside each line.
    """
    text = _COMMENT.sub("", wikitext)
    text = _REF.sub("", text)
    text = _DROP_TAGS.sub("", text)
    text = _until_stable(_TEMPLATE, "", text)
    text = _until_stable(_TABLE, "", text)
    text = _until_stable(_LINK, _link_label, text)
    text = _LEFTOVER.sub("", _EXTERNAL.sub(r"\1", text))
    text = html.unescape(_TAG.sub("", text))
    text = _HEADING.sub(r"\1", text)
    text = _LIST.sub("", _EMPHASIS.sub("", text))
    lines = [" ".join(line.split()) for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def iter_pages(xml_bytes: bytes):
    """Yield ``(title, wikitext)`` of every main-namespace, non-redirect page of a dump."""
    for _, elem in ET.iterparse(io.BytesIO(xml_bytes), events=("end",)):
        if _local(elem.tag) != "page":
            continue
        fields = {_local(child.tag): child for child in elem.iter()}
        text = fields["text"].text or "" if "text" in fields else ""
        is_article = (fields["ns"].text if "ns" in fields else "0") == "0"
        if is_article and "redirect" not in fields and not text.lstrip().upper().startswith("#REDIRECT"):
            yield fields["title"].text or "", text
        elem.clear()


def articles(bz2_bytes: bytes, min_chars: int = 2000) -> list[str]:
    """Clean articles of a bz2-compressed MediaWiki dump, each at least ``min_chars`` long.

    Args:
        bz2_bytes: the compressed dump.
        min_chars: drop articles shorter than this after cleaning (stubs, lists, disambiguations).

    Returns:
        One string per article, in dump order, its title as the first line.
    """
    out = []
    for title, wikitext in iter_pages(bz2.decompress(bz2_bytes)):
        body = strip_markup(wikitext)
        if len(body) >= min_chars:
            out.append(f"{title}\n\n{body}")
    return out
