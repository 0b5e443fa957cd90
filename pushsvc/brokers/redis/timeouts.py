"""How long the Redis broker waits, and for how many connections."""

# Connections for publish, presence, replay and tickets, shared by every greenlet of a worker. Every
# call on them fails fast: a Redis that hangs (paused, swapping, a long command ahead) must turn into a
# 503 or a soft refusal within a second, not hold publishers and browsers for a long timeout. A greenlet
# that finds all connections busy waits POOL_WAIT_SECONDS at most, a command COMMAND_TIMEOUT_SECONDS.
POOL_SIZE = 16
POOL_WAIT_SECONDS = 0.2
CONNECT_TIMEOUT_SECONDS = 0.7
COMMAND_TIMEOUT_SECONDS = 0.7
# A publish script that Redis starts later than this after it was sent stores nothing (clock.py): well
# inside the command timeout, so a publish answered 503 is never delivered later.
PUBLISH_DEADLINE_SECONDS = 0.4
