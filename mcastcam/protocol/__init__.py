"""The mcastcam wire protocol: schemas (:mod:`.wire`), codec (:mod:`.codec`), serial numbers.

This package imports neither :mod:`mcastcam.sender` nor :mod:`mcastcam.receiver`.
"""
