"""Weightscope: the frame around every page.

``streamlit run app.py`` runs this file on every rerun: it picks the page (st.navigation),
opens the frame (settings from the link or the session, data, the shared sidebar), runs
the page, and closes the frame (the URL written once). The pages live in ``views/``: a
folder named ``pages/`` would switch Streamlit into its old multipage mode, where a deep
link on a fresh server runs the page file without this frame.
"""

from ui import frame

nav = frame.navigation()
current = frame.open_frame(nav)
try:
    nav.run()
except frame.PageStopped:
    pass  # the page ended early (no run to show); its view so far still goes to the URL
frame.close_frame(current)
