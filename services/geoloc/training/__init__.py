"""Offline fitting: the experts' heads and the fusion, trained on labelled photos and written to models/.

    arguments.py           the options and data every `geoloc train` job shares
    features.py            backbone features of a split, computed in-process and cached
    loop.py                the optimisation loop the heads share (best step kept on a hold-out)
    manifest.py            the manifest beside every shipped checkpoint
    gallery_head.py        the gallery expert's image head (contrastive, against the GPS gallery)
    sampler.py             the sampler's flow-matching and SH-diffusion networks
    token_decoder.py       the token expert's decoder
    expert_outputs.py      every expert's answer for every photo of a split, as the services give it
    out_of_fold.py         the same answers from experts trained per fold without the photos asked about
    fusion.py              the fusion's likelihood fit (the experts' bandwidths) on those answers
    decision_fit.py        the prior, the weights and the radii, fitted on the best guess's GeoScore
    cross_validation.py    photographer-grouped CV of all of it, and the fit that ships
    shipped_experts.py     the shipped experts, retrained on every photo by the folds' procedure
    cv_cli.py              `geoloc cv [--write-fusion | --ship]`: its options, checked, handed to cv_run
    cv_run.py              the run's steps: the out-of-fold answers, the folds scored, the figures written
    cv_data.py             the photos cross-validated, and where --ship and --write-fusion write
    cv_pool.py             the folds scored in forked worker processes (--jobs)
    cv_reports.py          the per-fold figures, their summary over the folds, the tables printed
    cv_fusion.py           the fusion refitted on every photo's out-of-fold answers (--write-fusion)
    *_cli.py, cli.py       `geoloc train gallery|sampler|tokens|fusion` (the per-expert jobs choose on val)

Serving never imports this package: it reads what this package writes.
"""
