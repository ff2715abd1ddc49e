"""Frame samples, video-quality diagnosis, structured-processing trials and their analyzers."""
