"""The operator dashboard's static files (HTML, CSS, ES modules), served by the API.

A package so the files travel in the wheel as package data and load with importlib.resources
(see ``api.routes.dashboard``). ``uplot.iife.min.js`` and ``uplot.min.css`` are uPlot
1.6.32 (MIT), the charting library, as published in the ``dist/`` folder of the npm
package ``uplot@1.6.32`` (``npm pack`` tarball SHA-256
4b8a8191e425658e3ea8c8c1314b0fc679c861ee3a1af2b20c7b16ba50b5133d) with its license
prepended; to upgrade, replace both with a newer release's files and keep the header.
"""
