"""Data: dataset plugins prepare a folder in the fold format; the engine only reads that format."""
