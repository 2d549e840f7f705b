"""Results: Parquet tables, the Markdown report with figures, and regression comparison."""
