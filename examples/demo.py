"""A small numerical program, monitored with callscope.

    callscope run demo.py        # then: callscope top, callscope report

It relaxes a 1-D heat equation with a few solver steps on worker threads,
streams results through a generator, and hits (and handles) one error.
"""
import threading
import time

import callscope


@callscope.monitor
def laplacian(u):
    return [u[i - 1] - 2 * u[i] + u[i + 1] for i in range(1, len(u) - 1)]


@callscope.monitor(cpu=True)
def step(u, dt=0.1):
    lap = laplacian(u)
    return [u[0]] + [u[i + 1] + dt * lap[i] for i in range(len(lap))] + [u[-1]]


@callscope.monitor
def residual(u, v):
    return max(abs(a - b) for a, b in zip(u, v))


# its inputs and result are kept: callscope.load().get_args("solver.relax", 1)
@callscope.monitor(name="solver.relax", args=True, result=True)
def relax(u, tol=1e-4, max_steps=400):
    for n in range(max_steps):
        v = step(u)
        if residual(u, v) < tol:
            return v, n
        u = v
    raise RuntimeError(f"no convergence after {max_steps} steps")


@callscope.monitor
def snapshots(u, count):
    for _ in range(count):
        u = step(u)
        yield sum(u) / len(u)


@callscope.monitor(memory=True)
def load_grid(n):
    return [0.0] * (n // 2) + [1.0] * (n - n // 2)


def worker(results, i):
    with callscope.span("worker.solve"):
        u, n = relax(load_grid(64 + 8 * i), max_steps=2000)
        results[i] = n


def main():
    results = {}
    threads = [threading.Thread(target=worker, args=(results, i), name=f"solver-{i}")
               for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    means = list(snapshots(load_grid(32), 20))
    try:
        relax(load_grid(128), max_steps=5)
    except RuntimeError as e:
        print("handled:", e)
    timer = callscope.span("report")
    timer.start()
    time.sleep(0.01)
    timer.pause()
    time.sleep(0.05)  # not counted
    timer.resume()
    print("steps to converge per worker:", dict(sorted(results.items())))
    print("mean of last snapshot: %.4f" % means[-1])
    timer.stop()


if __name__ == "__main__":
    main()
