"""Reading results: statistics, comparisons, charts and the report. Imports neither Ray nor
redis nor psycopg.
"""
