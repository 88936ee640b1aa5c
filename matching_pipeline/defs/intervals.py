"""How often the latency-bound sensors ask to be evaluated.

Dagster's sensor daemon evaluates sensors in a loop that starts at most every 5 s, and a sensor is
evaluated on a loop only when ``minimum_interval_seconds`` have passed since its last tick began.
A minimum equal to the loop (5) skips a whole loop whenever a tick happens to begin a fraction of a
second later than the one before, which it often does (each tick starts after the sensors ahead of
it): a small drop then waits 10 s instead of 5 at each of its three hand-overs (the inbox, and the
two stage boundaries). Asking for less than the loop gets a tick on every loop, about every 5 s,
and costs nothing more, since the loop itself does not run faster.
"""

EVERY_DAEMON_LOOP = 2
"""``minimum_interval_seconds`` of the inbox, cascade and job-request sensors (see above)."""
