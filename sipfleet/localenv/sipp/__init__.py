"""SIPp scenarios of the SIP lab (data files; see sipfleet.localenv.siplab.run_sipp)."""
