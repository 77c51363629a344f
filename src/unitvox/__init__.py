"""unitvox: acoustic units, motifs and unit vocoders for speech research."""

__version__ = "0.1.0"
