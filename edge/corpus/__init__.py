"""Release validation on a recorded corpus (``hsi-edge corpus run|compare``).

A workflow above the pipeline: every recording of a corpus goes through the same job as
``hsi-edge run`` (:func:`edge.pipeline.app.run_job`), one Dask task per recording
(:mod:`edge.corpus.runner`); two runs are compared per recording and overall
(:mod:`edge.corpus.compare`) with a verdict against stated thresholds.  Dask, pyarrow and
matplotlib are optional (``pip install 'hsi-edge[corpus]'``) and imported only when used.
"""
