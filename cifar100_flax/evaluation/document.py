"""The report as a document: HTML from a Jinja2 template and its stylesheet, and the same HTML
laid out as a paginated PDF by WeasyPrint.

Why HTML and CSS: one source gives both files with the same content, text flows and tables break
across pages as a document engine does it (CSS paged media: page size, running page numbers,
figures kept whole), and WeasyPrint needs no TeX installation, only Pango, which Linux
distributions and macOS (Homebrew) have.
"""

import base64
import dataclasses
import datetime
import pathlib

import jinja2

PAPER_SIZES = ('A4', 'letter')
_TEMPLATES = pathlib.Path(__file__).with_name('templates')


@dataclasses.dataclass(frozen=True)
class Table:
  caption: str
  header: list[str]
  rows: list[list[str]]
  bold: frozenset[tuple[int, int]] = frozenset()  # the (row, column) of each cell in bold
  compact: bool = False  # smaller type (the class table)


@dataclasses.dataclass(frozen=True)
class Image:
  png: bytes
  alt: str  # says what the image is (also its file's stem)
  width: float  # percent of the text's width: the drawing's own size, so its type stays legible

  @property
  def uri(self) -> str:
    return 'data:image/png;base64,' + base64.b64encode(self.png).decode('ascii')


@dataclasses.dataclass(frozen=True)
class Figure:
  """A numbered figure: one image per run or one for all, a caption that says how to read it,
  and the tables that go with it."""
  number: int
  title: str
  caption: str
  images: list[Image]
  tables: list[Table] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Document:
  title: str
  metadata: list[tuple[str, str]]
  results: Table
  findings: str
  setup: Table
  figures: list[Figure]
  conclusions: list[str]
  classes: Table  # the appendix's


TEXT_WIDTH_INCHES = 7.0  # report.css: body's max-width


def render_html(document: Document, paper: str = 'A4') -> str:
  environment = jinja2.Environment(loader=jinja2.FileSystemLoader(_TEMPLATES),
                                   autoescape=True, trim_blocks=True, lstrip_blocks=True)
  return environment.get_template('report.html.j2').render(
      document=document, paper=paper, css=(_TEMPLATES / 'report.css').read_text(),
      date=datetime.date.today().isoformat())


def pdf(page: str) -> bytes:
  """`page` (render_html's) laid out on pages, as a PDF."""
  import weasyprint  # Pango's bindings: loaded only to write a PDF
  return weasyprint.HTML(string=page).write_pdf()
