"""The operator dashboard's static files (HTML, CSS, ES modules), served by the API.

A package so the files travel in the wheel as package data and load with importlib.resources
(see ``api.routes.dashboard``).
"""
