"""Tests of the live map (controller/livemap/)."""
