"""Celery's side of bench/jobs.sh: a no-op task on the same RabbitMQ, results in Redis, as a
Celery user would set it up (persistent messages, Celery's defaults otherwise).

    celery -A celery_noop worker -Q QUEUE          # the worker (prefork, Celery's concurrency)
    python3 celery_noop.py send QUEUE N            # N tasks; prints the end-to-end rate

The end-to-end rate counts from the first submission to the last task's finish (each task
returns its finish time), like Keel's figure (first `created_at` to last `finished_at`).
Settings from the environment: CELERY_BROKER (amqp://guest:guest@127.0.0.1:5672//) and
CELERY_BACKEND (redis://127.0.0.1:6379/15).
"""

import os
import sys
import time

from celery import Celery

app = Celery(
    "celery_noop",
    broker=os.environ.get("CELERY_BROKER", "amqp://guest:guest@127.0.0.1:5672//"),
    backend=os.environ.get("CELERY_BACKEND", "redis://127.0.0.1:6379/15"),
)
app.conf.worker_hijack_root_logger = False
app.conf.worker_log_color = False


@app.task(name="noop")
def noop(message):
    return time.time()


def send(queue, count):
    started = time.time()
    results = [noop.apply_async(args=["bench"], queue=queue) for _ in range(count)]
    accepted = time.time()
    finished = max(r.get(timeout=600) for r in results)
    for r in results:
        r.forget()
    print(
        f"{count} tasks: submitted at {count / (accepted - started):.0f}/s, "
        f"end to end {count / (finished - started):.0f} tasks/s"
    )


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "send":
        send(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit(__doc__)
