"""The MediaWiki cleaner: markup out, prose in; redirects and non-articles dropped."""
import bz2

from lowbit.data.wikitext import articles, iter_pages, strip_markup

WIKI = """{{Infobox person|name=X|born={{birth date|1900|1|1}}}}
'''Ada''' was a [[mathematician]] and [[Writing|writer]].<ref name="a">Some ref {{cite|x}}</ref> She
lived in [[London]].<ref name="b"/> [[File:Ada.jpg|thumb|A [[portrait]] of Ada]]
<!-- hidden comment -->
== Early life ==
* Born &amp; raised in ''London'' &nbsp;with <span>friends</span>.
{| class="wikitable"
| cell || {| nested |} 
|}
See [http://example.org the site] and [http://bare.org].
[[Category:Mathematicians]]
[[de:Ada]]
<math>x^2</math>"""


def test_strip_markup():
    text = strip_markup(WIKI)
    assert text.startswith("Ada was a mathematician and writer. She\nlived in London.")
    assert "Early life" in text and "Born & raised in London with friends." in text
    assert "See the site and ." in text
    for gone in ("{{", "}}", "[[", "]]", "<ref", "Infobox", "portrait", "thumb", "hidden", "cell", "wikitable",
                 "Category", "de:Ada", "x^2", "'''", "http", "&nbsp;", "<span"):
        assert gone not in text, gone


REDIRECT = '<redirect title="X"/>'


def _dump(pages):
    body = "".join(
        f"<page><title>{t}</title><ns>{ns}</ns>{REDIRECT if red else ''}"
        f"<revision><text>{text}</text></revision></page>" for t, ns, red, text in pages)
    return f'<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/">{body}</mediawiki>'.encode()


def test_iter_pages_keeps_main_namespace_articles_only():
    xml = _dump([("A", 0, False, "Alpha text"), ("B", 0, True, "#REDIRECT [[A]]"), ("C", 0, False, "#redirect [[A]]"),
                 ("Talk:A", 1, False, "talk"), ("D", 0, False, "Delta")])
    assert list(iter_pages(xml)) == [("A", "Alpha text"), ("D", "Delta")]


def test_articles_filters_short_ones_and_puts_the_title_first():
    long_text = "word " * 500
    dump = bz2.compress(_dump([("Long", 0, False, long_text), ("Stub", 0, False, "{{stub}} short")]))
    out = articles(dump, min_chars=2000)
    assert len(out) == 1 and out[0].startswith("Long\n\nword word")


def test_captions_with_brackets_and_unbalanced_templates():
    text = strip_markup("A [[File:x.png|thumb|Bicyclo[1.1.0]butane [above]]] B {{efn|chars {|}~}} C\nD")
    assert text == "A B\nD"
