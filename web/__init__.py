"""Review on the web: search, play and verify footage, cases and exports for courts,
法制审核 reviewers and supervisors; served by a station (`custody web`) and by the county
hub (`custody hub web`). Every view of footage, download, export and failed login is a
signed `access` entry."""
