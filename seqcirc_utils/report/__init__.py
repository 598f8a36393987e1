"""Report: charts, chapter tables for readers (tables), the Findings page and the published-results comparison, read from typed records. Imports the layers below."""
