#!/usr/bin/python3
"""dask_baseline.py - the same no-op workload through Dask, for comparison.

qtaud replaces Python pilot systems whose execution engine is Dask; this is
the figure qtaud's end-to-end rate is held against (target: 4x).  It starts
a LocalCluster with P single-threaded worker processes, then times
client.map() of N calls that each run the command (default /bin/true) with
subprocess.run, until client.gather() has every result: submit to last
completion, the same span bench/run times for qtaud.  Cluster start-up is
measured too but kept out of the rate, since a long-lived service pays it
once.

Output is "key value" lines, like the C tools in bench/:

    dask_baseline: n=20000 parallelism=2 command=/bin/true dask=2022.12.1
    startup_s 2.1
    elapsed_s 9.3
    tasks_per_s 2150.5
    failed 0

Run it with Debian's interpreter (/usr/bin/python3), which has
python3-distributed; another Python on PATH may not.
"""

import argparse
import logging
import os
import subprocess
import sys
import time


def run_command(argv):
    """Runs one task; returns its exit status (negative: killed by a signal)."""
    return subprocess.run(argv, check=False).returncode


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--tasks", type=int, default=20000,
                        help="how many tasks to run (default 20000)")
    parser.add_argument("-p", "--parallelism", type=int,
                        default=os.cpu_count() or 1,
                        help="worker processes, one thread each (default: CPUs)")
    parser.add_argument("command", nargs="*", default=["/bin/true"],
                        help="command to run per task (default /bin/true)")
    args = parser.parse_args()
    if args.tasks < 1 or args.parallelism < 1:
        parser.error("-n and -p must be positive")

    try:
        import dask
        from dask.distributed import Client, LocalCluster
    except ImportError as exc:
        print(f"dask_baseline: cannot import dask.distributed ({exc}); "
              "install python3-distributed and run with /usr/bin/python3",
              file=sys.stderr)
        return 1

    print(f"dask_baseline: n={args.tasks} parallelism={args.parallelism} "
          f"command={args.command[0]} dask={dask.__version__}", flush=True)

    t0 = time.monotonic()
    # No dashboard: it needs bokeh and costs CPU that the tasks should get.
    cluster = LocalCluster(n_workers=args.parallelism, threads_per_worker=1,
                           processes=True, dashboard_address=None,
                           silence_logs=logging.ERROR)
    client = Client(cluster)
    client.wait_for_workers(args.parallelism)
    startup = time.monotonic() - t0

    try:
        t1 = time.monotonic()
        # pure=False: identical arguments must still be N separate tasks,
        # not one result that Dask deduplicates.
        futures = client.map(run_command, [args.command] * args.tasks,
                             pure=False)
        statuses = client.gather(futures)
        elapsed = time.monotonic() - t1
    finally:
        client.close()
        cluster.close()

    failed = sum(1 for s in statuses if s != 0)
    print(f"startup_s {startup:.3f}")
    print(f"elapsed_s {elapsed:.6f}")
    print(f"tasks_per_s {args.tasks / elapsed:.1f}")
    print(f"failed {failed}")
    return 0


if __name__ == "__main__":
    # The guard matters: Dask starts its workers with multiprocessing's
    # "spawn", which re-imports this file in each worker.
    sys.exit(main())
