"""Report stage: figures, the comparison table and the self-contained results/report.html."""
