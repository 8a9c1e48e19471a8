"""Storage: the database every service uses (db) and its schema migrations (migrate, migrations/).
"""
