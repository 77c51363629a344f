"""Data diagnosis: levels, silence and clipping of every file, a filter list, why validation SNR is negative."""
