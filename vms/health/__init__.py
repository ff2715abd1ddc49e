"""Health of known cameras: status with hysteresis, events, history, online rate, clock drift (issue 8)."""
