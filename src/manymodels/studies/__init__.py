"""Demonstrations the notebooks and benches run, kept out of the library's own path: the fold-ensemble study
(``fold_ensemble``) and the tuning comparison with MLlib and a thread pool (``tuning``)."""
