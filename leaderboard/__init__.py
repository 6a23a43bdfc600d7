"""Ranking and rendering of finished runs (JSON, Markdown, HTML, plots)."""
