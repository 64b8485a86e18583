"""jaxseg.evaluation.worker_pool: ordered results, bounded work in flight, and the same COCO
results from worker processes as from the evaluation thread."""

import os
import signal

import numpy as np

from jaxseg.data import geometry
from jaxseg.evaluation import frames, worker_pool


def test_results_come_back_in_submission_order_with_two_per_worker_in_flight():
    pool = worker_pool.process_pool(1)
    try:
        work = worker_pool.OrderedWork(pow, pool, 1)
        assert work.submit(2, 10) == [] and work.submit(3, 2) == []
        assert work.submit(5, 1) == [1024]  # the third waits for the first
        assert work.drain() == [9, 5] and work.drain() == []
    finally:
        pool.close()
        pool.join()
    in_thread = worker_pool.OrderedWork(pow, worker_pool.process_pool(0), 0)
    assert in_thread.submit(2, 10) == [1024] and in_thread.drain() == []


def _detections(rng, count: int, canvas: int) -> dict:
    corners = rng.uniform(0, canvas - 8, (count, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(1, 20, (count, 2))], 1)
    return {
        "boxes": boxes.astype(np.float32),
        "scores": rng.uniform(0, 1, count).astype(np.float32),
        "classes": rng.integers(1, 3, count).astype(np.int32),
        "mask_probabilities": rng.uniform(0, 1, (count, 14, 14)).astype(np.float32),
        "valid": rng.random(count) < 0.8,
    }


def test_two_worker_processes_give_the_evaluation_threads_results():
    rng = np.random.default_rng(0)
    placement = geometry.placement((90, 60), geometry.Fit(64))
    images = [(placement, image_id, (0, 7, 9), _detections(rng, 12, 64), 0.5)
              for image_id in range(6)]
    expected = [frames.image_results(*image) for image in images]
    pool = worker_pool.process_pool(2)
    try:
        work = worker_pool.OrderedWork(frames.image_results, pool, 2)
        found = [result for image in images for result in work.submit(*image)] + work.drain()
    finally:
        pool.close()
        pool.join()
    assert [f.image_id for f in found] == list(range(6))
    for got, want in zip(found, expected):
        assert got.rles == want.rles and len(got.rles) >= 5
        np.testing.assert_array_equal(got.boxes, want.boxes)
        np.testing.assert_array_equal(got.scores, want.scores)
        np.testing.assert_array_equal(got.category_ids, want.category_ids)
        assert set(got.category_ids.tolist()) <= {7, 9}


def test_a_worker_sent_sigterm_carries_on_and_the_pool_closes():
    """A scheduler's SIGTERM reaches the workers too: they ignore it (the evaluating process
    decides), so the work sent to them still comes back."""
    pool = worker_pool.process_pool(2)
    try:
        pids = set(pool.map(_pid, range(8)))
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
        work = worker_pool.OrderedWork(pow, pool, 2)
        found = [result for n in range(6) for result in work.submit(n, 2)] + work.drain()
        assert found == [0, 1, 4, 9, 16, 25]
        assert set(pool.map(_pid, range(8))) <= pids  # the same processes, none replaced
    finally:
        pool.close()
        pool.join()


def _pid(_) -> int:
    return os.getpid()
