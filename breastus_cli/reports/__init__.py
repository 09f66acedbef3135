"""Reports layer: terminal output (rich), markdown/HTML reports and plots."""
