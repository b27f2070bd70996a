"""The pieces of `make loadtest` (loadtest/compare.py): process accounting from /proc, the
peers it starts, wrk runs, the idle-connection measurement, the runtime microbenchmarks, the
markdown report and the gnuplot charts. Python 3 standard library only."""
