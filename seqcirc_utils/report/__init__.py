"""Report: charts, the Findings page and the published-results comparison, read from typed records. Imports the layers below."""
