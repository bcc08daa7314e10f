"""The benchmark harness (`make bench`) and the minimal baseline app it measures the API against."""
