"""The rendering layer of the study report: figures, tables and the report document, from plain DataFrames.

The analysis computations produce the DataFrames; the pipeline reads MLflow and calls these functions. Every
writer returns the paths it wrote, and re-running with the same inputs writes byte-identical files.
"""

from spot_core.report.curves import k_curve, k_curve_figure
from spot_core.report.document import FigureRef, Section, config_section, markdown_to_html, write_document
from spot_core.report.heatmap import heatmap, heatmap_figure
from spot_core.report.scatter import correlation_figure, correlation_scatter
from spot_core.report.style import display_name, display_names, save_figure
from spot_core.report.tables import latex_escape, markdown_table_to_html, write_table

__all__ = [
    "FigureRef",
    "Section",
    "config_section",
    "correlation_figure",
    "correlation_scatter",
    "display_name",
    "display_names",
    "heatmap",
    "heatmap_figure",
    "k_curve",
    "k_curve_figure",
    "latex_escape",
    "markdown_table_to_html",
    "markdown_to_html",
    "save_figure",
    "write_document",
    "write_table",
]
