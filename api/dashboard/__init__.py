"""The operator dashboard's static files (HTML, CSS, ES modules), served by the API.

A package so the files travel in the wheel as package data and load with importlib.resources
(see ``api.routes.dashboard``). ``uplot.iife.min.js`` and ``uplot.min.css`` are uPlot
1.6.32 (MIT), the charting library, as published in its package's ``dist/`` folder with
its license prepended; to upgrade, replace both with a newer release's files and keep
the header.
"""
