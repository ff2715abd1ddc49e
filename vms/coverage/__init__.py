"""Coverage: counts, the four indicators, covered area from fields of view, and gaps."""
