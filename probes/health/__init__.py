"""Health checks of known cameras: the staged check of one camera and many (issue: scheduled health sweeps)."""
