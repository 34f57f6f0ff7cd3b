"""nodal's Streamlit apps: Design Studio, Deployer Console and Monitoring."""
