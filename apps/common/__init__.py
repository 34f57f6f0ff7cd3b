"""Small helpers shared by the three Streamlit apps (settings, store, status badges)."""
