"""Telemetry recorder, time-series stores, the YAML rules engine, alerts and rule actions.

Exception tree::

    rules.series.SeriesError            a time-series store refused a write or query
        rules.series.StoreUnavailable   ... because it cannot be reached (retry later)
    rules.files.RuleFileError           a rule or test file is invalid (file, line, message)
"""
