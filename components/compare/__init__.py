"""The compare step: plots, an HTML/Markdown report, comparison metrics and the champion gate."""
