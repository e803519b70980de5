"""Video and camera I/O: PyAV readers/writers, capture threads, queues, recorder."""
