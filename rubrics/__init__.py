"""Built-in rubrics of irtpeer (data files; loaded with ``irtpeer.harness.rubrics.load_rubric``)."""
