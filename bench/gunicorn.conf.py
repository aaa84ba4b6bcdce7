"""gunicorn settings shared by every gunicorn-served configuration.

floor (a), floor (b), moto under gunicorn and kmsweb are all served with this
one file, so that the only thing that differs between them is the WSGI app.
Each setting can be overridden from the environment (BENCH_*), e.g. to
repeat the worker sweep written down in docs/BENCHMARKS.md.

Chosen for a 2-core machine from the sweep on floor (a): see
docs/BENCHMARKS.md, "Server settings". The kmsweb configuration sets
BENCH_WORKER_CLASS=gthread and BENCH_THREADS=8 (bench/serve.py), as
``manage.py serve`` runs it.
"""

import os

bind = os.environ.get("BENCH_BIND", "127.0.0.1:8900")
workers = int(os.environ.get("BENCH_WORKERS", "2"))
worker_class = os.environ.get("BENCH_WORKER_CLASS", "sync")
threads = int(os.environ.get("BENCH_THREADS", "1"))
# Load the app once in the master before forking the workers: start-up is
# faster and, for moto (whose state lives in process memory), the key made
# at import time is shared by every worker.
preload_app = True
keepalive = int(os.environ.get("BENCH_KEEPALIVE", "5"))
backlog = 2048
timeout = 30
graceful_timeout = 5
# No access log: an operator would ship logs elsewhere; writing one line per
# request to a terminal here would be measured as well.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("BENCH_LOGLEVEL", "warning")
